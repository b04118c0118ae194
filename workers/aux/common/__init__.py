"""Building blocks shared by the auxiliary methods: presets, results, progress, data, nets, metrics."""
