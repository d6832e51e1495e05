"""The network runtime: trio, libp2p and the daemon that wires them to the node service."""
