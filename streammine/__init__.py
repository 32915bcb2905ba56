"""streammine: distributed, streaming hard-negative mining for retrieval and embedding models, on Ray."""
from .api import demo_data_path, load_config, mine, shutdown
from .config import MineConfig
from .errors import ConfigError, InputError, OutputError, StreamMineError, StreamMineWarning

__all__ = ["mine", "load_config", "demo_data_path", "shutdown", "MineConfig", "StreamMineError", "InputError",
           "OutputError", "ConfigError", "StreamMineWarning"]
__version__ = "0.1.0"
