"""Model zoo: torch network definitions, export helpers and the small committed ONNX files."""
