"""kondense's Kubernetes operator: CompressionJob resources run as Indexed Jobs of `kondense worker` pods."""
