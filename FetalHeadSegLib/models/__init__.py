"""Models: the networks, the self-describing bundle that holds them, and where bundles are found.

A :class:`~FetalHeadSegLib.models.network_config.NetworkConfig` describes a network without torch;
:mod:`~FetalHeadSegLib.models.networks` builds it. A bundle (``bundle.json`` plus plain ``state_dict`` weights with
their sha256) is read and verified by :mod:`~FetalHeadSegLib.models.bundle`, looked up by id in
:mod:`~FetalHeadSegLib.models.catalog`, and run on the device :mod:`~FetalHeadSegLib.models.device` resolves.
Importing this package loads nothing; torch is imported only when a network is built.
"""
