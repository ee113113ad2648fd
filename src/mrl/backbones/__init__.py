"""Backbones: timm image models and Hugging Face text encoders, each exposing ``embed_dim``."""

from mrl.backbones.hf_text import HFTextEncoder, default_minilm_path
from mrl.backbones.timm_backbone import TimmBackbone, check_timm_name

__all__ = ["HFTextEncoder", "TimmBackbone", "check_timm_name", "default_minilm_path"]
