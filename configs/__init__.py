"""Training configurations shipped with toco_fast (YAML files; installed as ``toco_fast.configs``)."""
