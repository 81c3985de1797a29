# mmpretrain's runtime (hooks, environment, logging, visualizer), as every pipeline of ours inherits it, with
# its visualizer rid of the `_scope_` key that MMEngine puts into each top-level dict of a `pkg::` base.
# mmpretrain's tools/visualization/browse_dataset.py (1.2.0) builds the visualizer as
# UniversalVisualizer(**settings less 'type'), not through the registry, and a `_scope_` there fails with
# "Visualizer.__init__() got an unexpected keyword argument '_scope_'". Built through VISUALIZERS (runners,
# other tools) it is the same visualizer: our configs' default_scope is mmpretrain. Configs of another
# default scope (downstream) do not inherit this file.
_base_ = 'mmpretrain::_base_/default_runtime.py'

visualizer = dict(_base_.visualizer, _delete_=True)  # mmpretrain's type and backends, replacing the scoped dict
visualizer.pop('_scope_')
