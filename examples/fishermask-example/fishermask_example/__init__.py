"""An example fishermask plug-in package: a dataset factory (``data.shapes``), a network
(``nets.ShapeNet``) and a strategy (``strategies.BalancedMargin``).  Installed, they are the
names ``shapes``, ``shape_net`` and ``balanced_margin``; without installing, their import paths
``fishermask_example.data:shapes`` and so on."""
