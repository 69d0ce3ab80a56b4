"""Inspection nodes: see what each stage does, as the tutorial's figures show it (inspection), and
IMAGE batches laid out as titled grids (grid). The tutorial's trained models live in nodes.classcond
and nodes.textcond."""
