"""Search spaces: the op registry, DARTS cells, the supernet, genotypes and discrete networks."""
from hwnas.spaces.genotype import DARTS_V1, DARTS_V2, Genotype, derive_genotype, load_genotype
from hwnas.spaces.network import DiscreteNetwork, NetworkConfig, count_parameters
from hwnas.spaces.ops import OPS, PRIMITIVES
from hwnas.spaces.supernet import Supernet, SupernetConfig

__all__ = ["DARTS_V1", "DARTS_V2", "Genotype", "derive_genotype", "load_genotype", "DiscreteNetwork",
           "NetworkConfig", "count_parameters", "OPS", "PRIMITIVES", "Supernet", "SupernetConfig"]
