"""`bench agree`: do the scores agree with people? Human ratings read in the formats the field
releases them (ImagenHub rater TSVs, DreamBench++ rating JSONs, a long table), inter-rater
reliability (Krippendorff's alpha), metric-human agreement (item-level correlations, alpha
against each rater group, system-level rank agreement) and paired comparisons of two metrics'
agreement, each with a bootstrap interval. docs/agreement.md explains every figure.

One job a module: ``ratings`` (the in-memory model and its checks), ``readers`` (format
detection, ImagenHub, long table), ``dreambench`` (the DreamBench++ release layout), ``scores``
(metric scores and the join), ``resample`` (bootstrap draws and intervals), ``reliability``
(human means, alpha), ``correlation`` (item and system level, paired differences),
``analysis`` (all figures of one call), ``output`` (tables, JSON), ``cli``.
"""
