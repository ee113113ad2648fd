"""Training and evaluation data: image sets (``mrl.data.image``), text sets (``mrl.data.text``), the data-module
base both build on (``mrl.data.base``) and the resumable training order they share (``mrl.data.sampling``)."""
