"""flexvar-deploy: the FlexVAR scale-wise autoregressive image generator, for production.

    import flexvar
    pipe = flexvar.Pipeline.from_checkpoints(var_ckpt, vae_ckpt, device="cpu")
    out = pipe.generate(labels=[207, 88], schedule="256-10", seed=0)
"""
from .config import FlexVARConfig, VQVAEConfig
from .errors import FlexVARError
from .pipeline import GenerationOutput, Pipeline
from .sampling import SamplingParams
from .schedule import Schedule

__all__ = ["FlexVARConfig", "VQVAEConfig", "FlexVARError", "GenerationOutput", "Pipeline", "SamplingParams",
           "Schedule"]
__version__ = "0.1.0"
