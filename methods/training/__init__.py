"""Training (`python -m bench train`): the EZIGen adapter, its trained-reference variant and the projector
baselines, on COCO and YouTube-VIS pairs; see methods/training/README.md."""
