"""Configuration: the typed schema (``schema``), YAML presets and overrides (``loader``), shipped presets
(``presets/*.yaml``: voc_vit_b, coco_vit_b, synthetic_tiny)."""
from toco_fast.config.loader import (
                                     apply_overrides,
                                     available_configs,
                                     config_path,
                                     from_dict,
                                     load_config,
                                     save_config,
                                     to_dict,
)
from toco_fast.config.schema import (
                                     CamConfig,
                                     Config,
                                     ConfigError,
                                     DataConfig,
                                     EvalConfig,
                                     LossConfig,
                                     ModelConfig,
                                     OptimConfig,
                                     SyntheticConfig,
                                     TrainConfig,
                                     validate,
)

__all__ = ["CamConfig", "Config", "ConfigError", "DataConfig", "EvalConfig", "LossConfig", "ModelConfig", "OptimConfig",
           "SyntheticConfig", "TrainConfig", "apply_overrides", "available_configs", "config_path", "from_dict",
           "load_config", "save_config", "to_dict", "validate"]
