"""The real-node lane: images built on this machine from Debian packages and this repository, and kind."""
