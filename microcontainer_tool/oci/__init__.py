"""Writers and stores: reproducible layers, codecs, the layer cache, OCI JSON, layouts and archives."""
