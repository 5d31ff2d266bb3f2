"""Recorders for other people's training loops: a Hugging Face `TrainerCallback` (`ontogeny[hf]`) and a
PyTorch Lightning `Callback` (`ontogeny[lightning]`), both built on `og.Recorder`. Import the one you need:
`from ontogeny.integrations.hf import OntogenyCallback`."""
