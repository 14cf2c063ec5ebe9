# Sourced by scripts/test: the cluster managers the launcher tests run for real (tests/integration
# /test_deploy_slurm.py, tests/unit/test_deploy_kubernetes.py). Cheap when they are there.
# Otherwise, as root with apt-get, install Debian's packages: slurmctld, slurmd, slurm-client
# and munge (the SLURM test starts its own single-node cluster from them, no systemd needed),
# and kubernetes-client for `kubectl kustomize` when no kubectl is installed. Failing is not
# fatal here: those tests then skip and say why, or fail under CI=true.

have_cluster_tools() {
  local tool
  for tool in munged slurmctld slurmd srun sbatch squeue scancel sinfo scontrol kubectl; do
    command -v "$tool" >/dev/null 2>&1 || return 1
  done
}

ensure_cluster_tools() {
  have_cluster_tools && return 0
  local log packages=(slurmctld slurmd slurm-client munge)
  command -v kubectl >/dev/null 2>&1 || packages+=(kubernetes-client)
  log=$(mktemp)
  echo "== installing ${packages[*]} for the launcher tests (once; log: $log)"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Other checkouts may run apt at the same time: wait for the lock instead of failing.
    if apt-get -o DPkg::Lock::Timeout=300 update -q >"$log" 2>&1 &&
       DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q \
         "${packages[@]}" >>"$log" 2>&1; then
      return 0
    fi
  fi
  echo "   could not install them (see $log): the SLURM and Kubernetes tests will skip" \
    "(and fail under CI=true)" >&2
}
