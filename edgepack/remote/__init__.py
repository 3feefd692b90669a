"""Devices over SSH (or a local directory standing in for one).

``connector`` defines the one interface every transport satisfies (run a command from quoted
arguments, move files, rename atomically); ``ssh`` and the local connector implement it. ``facts``
gathers what a device is in one round trip, ``detect`` maps those facts to a target profile,
``sync`` deploys a bundle verified, resumable and atomic, ``fleet`` does that for many hosts at
once, ``telemetry`` and ``bench`` measure a deployed bundle on the device.
"""
