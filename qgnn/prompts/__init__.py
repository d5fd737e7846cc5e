"""Prompts: GPF and GPF-plus on input features, LoRAP on aggregated features."""

from qgnn.prompts.attach import attach_prompts, prompt_report
from qgnn.prompts.config import PromptConfig
from qgnn.prompts.lorap import LoRAP
from qgnn.prompts.node import GPF, GPFPlus

__all__ = ["GPF", "GPFPlus", "LoRAP", "PromptConfig", "attach_prompts", "prompt_report"]
