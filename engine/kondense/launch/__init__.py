"""Starting ranks: a worker's local processes (one pod, or several workers on this machine), and the
stages of a CompressionJob run by them."""
