"""Step-time cost model: FLOPs and bytes per operator, bounded by the GPU's roofs."""
