"""Mixed Precision DNNs (Uhlich et al., ICLR 2020) on NNabla."""
