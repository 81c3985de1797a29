# What makes a config with an `incubation` section a pipeline for every tool, not only ours: mmpretrain's,
# mmdet's and mmseg's own tools/train.py build `runner_type` when a config names one, so they run the whole
# pipeline (meta -> incubate x K -> assemble -> fine-tune) instead of training the full model as a plain
# classifier; `custom_imports` registers IncubationRunner (and our compatibility fixes) first. Both stay out of
# the phase recipes (runner_type is popped from each, custom_imports is not part of their fingerprint), so
# products are the same whichever tool started the pipeline.
runner_type = 'mmincubation.IncubationRunner'
custom_imports = dict(imports=['mmincubation'], allow_failed_imports=False)
