"""Export of FlexVAR graphs (installed as flexvar.export): ONNX files per graph, scale buckets and a
manifest, cached under names carrying the weights' fingerprint, precision and tool versions."""
from .artifacts import ArtifactError, export_onnx, load_manifest, weights_fingerprint
from .graphs import BUCKETS, Bucket, DecoderGraph, EncoderGraph, TransformerStepGraph, bucket_for

__all__ = ["ArtifactError", "export_onnx", "load_manifest", "weights_fingerprint", "BUCKETS", "Bucket",
           "DecoderGraph", "EncoderGraph", "TransformerStepGraph", "bucket_for"]
