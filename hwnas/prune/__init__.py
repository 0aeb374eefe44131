"""ResNet18 gate pruning (Algorithm 1 of the performance-control paper): gates' cost, the gate λ-hypernet,
Λ for gates, the prune run. λ sampling, the hypernets and Λ's parts are imported from `hwnas.search`."""
