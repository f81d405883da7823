"""The lab: an emulated multi-region cloud on this machine in which `spike run --provider aws` runs.

moto answers EC2 (and STS, SSM) on 127.0.0.1:PORT; every instance RunInstances creates becomes a
real host: a network namespace on the lab bridge with its own address, a copy-on-write view of
this machine's filesystem, a real sshd with a fresh host key, the key pair's public key
authorised for the image's login user, and its user_data really executed. GetConsoleOutput shows
the host keys the way cloud-init prints them, so spike pins them unchanged; TerminateInstances
(or the bootstrap's own TTL power-off) removes the host. Each region reaches the target through
its own latency proxy. Everything runs in one daemon (`loadorch.lab.daemon`), started by
`spike lab up` and stopped by `spike lab down`, which also sweeps what a killed daemon left.

Modules: `network` (the fixed address plan, bridge, namespaces, sweep), `moto_hooks` (why moto
in-process with hooks), `hosts` (each host's life, daemon side), `guest` (each host's init,
inside it), `console` (what cloud-init prints), `shims` (what user_data finds instead of dnf,
shutdown, sysctl, systemctl, chronyc), `daemon`, `control` (LabClient, lab_up/lab_down, Lab),
`state` (settings, state dir layout), `latency` (the per-region latency proxy).

What is emulated, and how (the README's list):
- Instances: each is a host as above; its public IP (DescribeInstances, Terraform's public_ip)
  is its lab address 198.18.i.(10+n); moto keeps its private IP. Instance type, AMI, volumes,
  security groups and spot options are moto's records only: every host is this machine (its
  CPUs, memory, kernel, programs), and security groups are not enforced (the lab network only
  reaches this machine anyway). StopInstances/StartInstances/RebootInstances change moto's
  record only, and a host that powered off with behaviour `stop` is gone for good.
- Boot: no kernel boots; the host's init (`guest`) does cloud-init's work: hostname, /etc/hosts
  (with `target.spike-lab.test` -> the region's edge address), no DNS, the login user (default
  ec2-user) with the key pair's public key, fresh ed25519 and ECDSA host keys, sshd, user_data
  as root with bash, then the host keys on the console. Every process of the host gets an open
  files limit of 65535 (what the bootstrap's limits.d asks for; nothing applies limits.d without
  PAM), or this machine's hard limit where the lab may not raise it (20000 on these machines).
- Console: empty until the host has booted, then at most the last 64 KB, base64 as EC2 sends it.
- user_data: really run; package installs, shutdown, sysctl, systemctl and chronyc are emulated
  as `loadorch.lab.shims` lists exactly. The TTL (`shutdown -h +N`) is really honoured.
- Time: every host shares this machine's clock (no time sync runs or is needed).
- Containment: a host's writes land in its own overlay upper dir; /tmp, /run, /dev/shm are its
  own; the lab's state dir is hidden from it. It is not a security boundary: user_data runs as
  this machine's root, in a chroot.
- Not emulated: instance metadata (169.254.169.254), IPv6, stopping and starting hosts.
"""
