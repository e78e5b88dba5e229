#!/usr/bin/env bash
# Starts a single-node Slurm cluster on this machine for the sweep tests: munged, slurmctld and
# slurmd, with the node `localhost` and no cgroup plugins. Safe to run again: daemons that
# already respond are left alone. Needs root and Debian's `slurm-wlm` and `munge` packages, which
# it installs with apt-get when they are missing. Exits 0 after printing the reason when Slurm
# cannot start, so that the Slurm test skips instead of the whole test run failing.
set -uo pipefail

say() { echo "slurm-up: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
  say "not root; Slurm not started"
  exit 0
fi
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge"
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge) >/dev/null; then
    say "cannot install slurm-wlm and munge; Slurm not started"
    exit 0
  fi
fi

conf_dir=/etc/slurm
mkdir -p "$conf_dir" /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /etc/munge
cpus=$(nproc)
memory=$(awk '/MemTotal/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo)

if [ ! -s /etc/munge/munge.key ]; then
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null
chmod 0400 /etc/munge/munge.key
chmod 0755 /run/munge

cat >"$conf_dir/slurm.conf.new" <<EOF
# Written by scripts/slurm-up.sh: one node, no accounting, no cgroups.
ClusterName=pretext
SlurmctldHost=localhost
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
MinJobAge=600
SlurmdTimeout=60
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
if ! cmp -s "$conf_dir/slurm.conf.new" "$conf_dir/slurm.conf"; then
  mv "$conf_dir/slurm.conf.new" "$conf_dir/slurm.conf"
  changed=1
else
  rm "$conf_dir/slurm.conf.new"
  changed=0
fi
# No cgroup.conf: with proctrack/linuxproc and task/none, slurmd 22.05 needs no cgroup plugin.

if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  say "starting munged"
  su -s /bin/sh munge -c "/usr/sbin/munged" 2>/dev/null || /usr/sbin/munged --force
fi

if [ "$changed" = 1 ] && pgrep -x slurmctld >/dev/null; then
  say "configuration changed; reconfiguring"
  scontrol reconfigure >/dev/null 2>&1
fi
if ! scontrol ping 2>/dev/null | grep -q UP; then
  say "starting slurmctld"
  slurmctld -c 2>/dev/null || slurmctld
fi
if ! pgrep -x slurmd >/dev/null; then
  say "starting slurmd"
  slurmd -N localhost
fi

for _ in $(seq 1 30); do
  if sinfo -h -o %T 2>/dev/null | grep -Eq '^(idle|mix|alloc)'; then
    say "cluster up: $(sinfo -h -o '%P %D %T %c CPUs' | head -1)"
    exit 0
  fi
  scontrol update nodename=localhost state=resume >/dev/null 2>&1
  sleep 1
done
say "Slurm did not become ready; see /var/log/slurm/slurmctld.log and slurmd.log"
exit 0
