"""The CompressionJob as data, without torch: the manifest and its validation, the status and
its conditions, the worker environment contract. Shared by `kondense run` and the operator."""
