"""Scale-out on engines people already run: Ray Data for batch jobs (``segtool[ray]``), and a
model repository for Triton Inference Server (no extra dependency)."""
