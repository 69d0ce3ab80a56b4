"""Model files and loading: the models folder (model_files), diffusers folders and single files of
every family (checkpoints, single_file, ldm_layout, controlnet_files), the Load* stage nodes
(loaders), ComfyUI's MODEL/CLIP bundles (bundles), CLIP's locally built vocabulary (clip_bpe),
device placement and speed options, and the tiny models written for demos and tests (tiny).
What each family is lives in nodes.families; this package reads its declarations."""
