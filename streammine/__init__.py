"""streammine: distributed, streaming hard-negative mining for retrieval and embedding models, on Ray."""
from .api import demo_data_path, load_config, mine
from .config import MineConfig
from .errors import ConfigError, InputError, OutputError, StreamMineError

__all__ = ["mine", "load_config", "demo_data_path", "MineConfig", "StreamMineError", "InputError", "OutputError",
           "ConfigError"]
__version__ = "0.1.0"
