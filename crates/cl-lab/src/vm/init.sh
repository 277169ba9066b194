#!/bin/busybox sh
# /init of a linuxha VM-lab guest (PID 1, busybox ash). Built into the initramfs by
# crates/cl-lab/src/vm/assets.rs; parameters come from the kernel command line as lh.<key>=<value>:
#   lh.host=node1                              hostname (= cluster node name)
#   lh.nic0=52:54:00:00:00:01,10.10.0.11/24    NIC with that MAC becomes eth0 with that address
# Disks are found by their virtio serial: "data" (LVM PV) and "system" (ext4, persistent state).
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
# No udev here: LVM must not wait for it, and must not complain about the agent's descriptors.
export LVM_SUPPRESS_FD_WARNINGS=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm /run /tmp /mnt/host /mnt/sys /sys/fs/cgroup
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mkdir -p /run/lock/lvm /run/lvm /run/drbd /run/cluster /var
ln -sfn /run /var/run
ln -sfn /run/lock /var/lock
for a in $(cat /proc/cmdline); do
  case $a in lh.*=*) k=${a%%=*}; eval "${k#lh.}='${a#*=}'";; esac
done
hostname "${host:-guest}"
echo "${host:-guest}" > /etc/hostname
printf '127.0.0.1 localhost\n' > /etc/hosts
echo /bin/modprobe > /proc/sys/kernel/modprobe
modprobe -a virtio_pci virtio_blk virtio_net virtio_console virtio-rng crc32c_generic ext4 \
  9pnet_virtio 9p dm-mod softdog loop af_packet 2>/dev/null
modprobe drbd || echo "lh-init: modprobe drbd failed" > /dev/ttyS0

# Disks by serial, named as udev would.
mkdir -p /dev/disk/by-id
for i in 1 2 3 4 5 6 7 8 9 10; do
  for b in /sys/block/vd*; do
    [ -e "$b/serial" ] || continue
    s=$(cat "$b/serial")
    [ -n "$s" ] && ln -sfn "/dev/${b##*/}" "/dev/disk/by-id/virtio-$s"
  done
  [ -e /dev/disk/by-id/virtio-system ] && break
  usleep 50000
done
# The system disk keeps what a real node keeps on its root disk across power cycles.
sys=/dev/disk/by-id/virtio-system
sysok=""
if [ -e $sys ]; then
  fsck.ext4 -p $sys >/dev/null 2>&1
  if mount -t ext4 $sys /mnt/sys; then sysok=1; else echo "lh-init: cannot mount the system disk" > /dev/ttyS0; fi
fi
for d in etc/cluster var/lib/cluster var/log/cluster etc/drbd.d var/lib/drbd etc/lvm/backup etc/lvm/archive; do
  mkdir -p "/$d"
  if [ -n "$sysok" ]; then mkdir -p "/mnt/sys/$d" && mount --bind "/mnt/sys/$d" "/$d"; fi
done

# NICs by MAC: rename all first (eth0 and eth1 may be swapped), then address and bring up.
ip link set lo up
for i in 0 1 2 3; do
  eval "spec=\$nic$i"
  [ -n "$spec" ] || continue
  mac=${spec%%,*}
  for t in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do
    found=""
    for n in /sys/class/net/*; do
      [ "$(cat "$n/address")" = "$mac" ] && found=${n##*/}
    done
    [ -n "$found" ] && break
    usleep 50000
  done
  [ -n "$found" ] && ip link set "$found" name "lhnic$i"
done
for i in 0 1 2 3; do
  eval "spec=\$nic$i"
  [ -n "$spec" ] || continue
  ip link set "lhnic$i" name "eth$i" && ip addr add "${spec#*,}" dev "eth$i" && ip link set "eth$i" up
done

# The host's binary directory, read-only; /usr/sbin/linuxha and the command links point into it.
mount -t 9p -o trans=virtio,version=9p2000.L,ro host /mnt/host ||
  echo "lh-init: cannot mount the host share" > /dev/ttyS0
# LVM volume groups found on the disks are activated at boot, as on a real machine.
lvm vgchange -ay --sysinit >/dev/null 2>&1
# What the cldaemon unit does on a real node: a node with a built cluster configuration starts
# its node manager at boot (it rejoins a cluster that runs, or waits for clform).
if [ -e /etc/cluster/.built/clconf.json ]; then
  /usr/sbin/cldaemon >/dev/null 2>&1 || echo "lh-init: cldaemon did not start" > /dev/ttyS0
fi

# Command agent on the virtio-serial port "agent": request "<tag> <base64 script>",
# reply "\n__BEGIN__ <tag>\n<output>\n__RC__ <tag> <rc>\n".
agent() {
  dev=""
  for i in $(seq 1 200); do
    for p in /sys/class/virtio-ports/*; do
      [ "$(cat "$p/name" 2>/dev/null)" = agent ] && dev=/dev/${p##*/}
    done
    [ -n "$dev" ] && [ -e "$dev" ] && break
    usleep 20000
  done
  exec 3<>"$dev"
  while true; do
    while read -r tag b64 <&3; do
      echo "$b64" | base64 -d > /tmp/.agent.sh
      ( cd /; sh /tmp/.agent.sh </dev/null >/tmp/.agent.out 2>&1 3>&- ); rc=$?
      { printf '\n__BEGIN__ %s\n' "$tag"; cat /tmp/.agent.out; printf '\n__RC__ %s %s\n' "$tag" "$rc"; } >&3
    done
    usleep 50000
  done
}
agent &
echo "LH-READY host=$host uptime=$(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS0
# A shell on the serial console for humans (console.sock in the node's lab directory).
while true; do setsid cttyhack sh -l </dev/ttyS0 >/dev/ttyS0 2>&1; done
