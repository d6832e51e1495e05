"""fabnode's adapters: the filesystem, the home directory, and (later) the network and HTTP."""
