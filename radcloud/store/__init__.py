"""The object store and what is staged in it: the S3 client, key layout, staged series and manifests."""
