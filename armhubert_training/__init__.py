"""Training and tooling for ArmHubert students: data loading, the masking-distillation, CTC and
classification Trainers, the frozen teacher, the query-by-example DTW and MTWV, model cards, YAML
recipes, the checkpoint converter and the ONNX export.

The model itself is in the top-level `modeling_armhubert` and `configuration_armhubert`, the files
that travel with a saved model as remote code; they import nothing from this package. So do
`asr_pipeline` and `classification_pipeline` (which uses only `asr_pipeline`), the pipeline classes
that saved ASR and classification models carry.
"""
