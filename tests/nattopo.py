"""Real NAT on one machine: network namespaces, veth pairs, a bridge and iptables masquerade.

The layout (docs/design.md, "Labs behind NAT"), every namespace named with this run's own suffix:

    PUBLIC  198.18.0.0/24 on a bridge in namespace ``inet``:
            hub 198.18.0.1 · nat-a's WAN 198.18.0.2 · nat-b's WAN 198.18.0.3 · pub 198.18.0.4
    lab-a   10.1.0.2 behind nat-a (10.1.0.1), masqueraded to 198.18.0.2
    lab-b   10.2.0.2 behind nat-b (10.2.0.1), masqueraded to 198.18.0.3

Nothing routes between 10.1/24 and 10.2/24; the NATs drop unsolicited SYNs silently (as home
routers do) so TCP hole punching can work; nothing leaves the namespaces this class made.
:func:`why_unavailable` says why it cannot be built here (not root, no ``ip``/``iptables``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess

HUB_IP, NAT_A_WAN, NAT_B_WAN, PUB_IP = "198.18.0.1", "198.18.0.2", "198.18.0.3", "198.18.0.4"
LAB_A_IP, LAB_B_IP = "10.1.0.2", "10.2.0.2"


def why_unavailable() -> str | None:
    """None if namespaces and iptables can be used here, else the reason (for pytest.skip)."""
    if os.geteuid() != 0:
        return "real NAT needs root (network namespaces and iptables)"
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            return f"real NAT needs the {tool!r} command (Debian package {package})"
    probe = f"fnprobe{secrets.token_hex(3)}"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    try:
        rule = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-t", "nat", "-A", "POSTROUTING",
                               "-o", "lo", "-j", "MASQUERADE"], capture_output=True, text=True)
        if rule.returncode != 0:
            return f"iptables cannot add a NAT rule here: {rule.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class NatTopology:
    """Builds the namespaces in ``__init__`` (tearing down what it made if a step fails);
    :meth:`close` removes them all. ``prefix(role)`` runs a command inside one."""

    ROLES = ("inet", "hub", "pub", "nat-a", "lab-a", "nat-b", "lab-b")

    def __init__(self, suffix: str | None = None) -> None:
        self.suffix = suffix or secrets.token_hex(3)
        self.ns = {role: f"fn{self.suffix}-{role}" for role in self.ROLES}
        self.made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def prefix(self, role: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.ns[role])

    def sh(self, role: str | None, *cmd: str) -> str:
        full = [*(self.prefix(role) if role else ()), *cmd]
        done = subprocess.run(full, capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(full)}: {done.stderr.strip()}")
        return done.stdout

    def _ns(self, role: str) -> None:
        self.sh(None, "ip", "netns", "add", self.ns[role])
        self.made.append(self.ns[role])
        self.sh(role, "ip", "link", "set", "lo", "up")

    def _wire(self, role: str, ifname: str, addr: str, other: str, other_if: str) -> None:
        """A veth pair: ``ifname`` in ``role`` with ``addr``, ``other_if`` in ``other``."""
        self.sh(None, "ip", "-n", self.ns[role], "link", "add", ifname, "type", "veth",
                "peer", "name", other_if, "netns", self.ns[other])
        self.sh(role, "ip", "addr", "add", addr, "dev", ifname)
        self.sh(role, "ip", "link", "set", ifname, "up")
        self.sh(other, "ip", "link", "set", other_if, "up")

    def _build(self) -> None:
        for role in self.ROLES:
            self._ns(role)
        self.sh("inet", "ip", "link", "add", "br0", "type", "bridge")
        self.sh("inet", "ip", "link", "set", "br0", "up")
        for role, ip, port in (("hub", HUB_IP, "vhub"), ("nat-a", NAT_A_WAN, "vnata"),
                               ("nat-b", NAT_B_WAN, "vnatb"), ("pub", PUB_IP, "vpub")):
            self._wire(role, "wan", f"{ip}/24", "inet", port)
            self.sh("inet", "ip", "link", "set", port, "master", "br0")
        for nat, lab, net in (("nat-a", "lab-a", "10.1.0"), ("nat-b", "lab-b", "10.2.0")):
            self._wire(nat, "lan", f"{net}.1/24", lab, "eth0")
            self.sh(lab, "ip", "addr", "add", f"{net}.2/24", "dev", "eth0")
            self.sh(lab, "ip", "route", "add", "default", "via", f"{net}.1")
            self.sh(nat, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
            for rule in (["-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"],
                         ["-A", "FORWARD", "-i", "wan", "-m", "state", "--state", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
                         ["-A", "FORWARD", "-i", "wan", "-j", "DROP"],
                         # a home router drops an unsolicited SYN silently (a RST would break hole punching)
                         ["-A", "INPUT", "-i", "wan", "-p", "tcp", "--syn", "-m", "conntrack", "--ctstate", "NEW",
                          "-j", "DROP"]):
                self.sh(nat, "iptables", *rule)

    def wan_bytes(self, role: str = "hub") -> int:
        """Bytes received plus sent on ``role``'s public interface (what crossed it)."""
        rx = int(self.sh(role, "cat", "/sys/class/net/wan/statistics/rx_bytes"))
        tx = int(self.sh(role, "cat", "/sys/class/net/wan/statistics/tx_bytes"))
        return rx + tx

    def close(self) -> None:
        """Kill what still runs inside, then delete every namespace made (veths go with them)."""
        for name in reversed(self.made):
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.made.clear()
