"""joindet detector: Deformable DETR with the JoinDet heads. Never imports priors."""
