"""Reads model cards the way the Hugging Face Hub does (huggingface_hub's ModelCard); runs in
.venv-clients. Prints JSON on stdout: for each card file, its metadata and model-index results.

    python hub_client.py CARD...
"""

import json
import sys

from huggingface_hub import ModelCard


def read(path):
    card = ModelCard.load(path)  # a local file: parsed as the Hub parses an uploaded README.md
    data = card.data
    return {
        "license": data.license, "library_name": data.library_name,
        "pipeline_tag": data.pipeline_tag, "datasets": data.datasets, "metrics": data.metrics,
        "tags": data.tags, "model_name": data.model_name,
        "results": [{"task": r.task_type, "dataset": r.dataset_type, "split": r.dataset_split,
                     "metric": r.metric_type, "value": r.metric_value}
                    for r in data.eval_results or []],
        "text_starts": card.text.lstrip().splitlines()[0],
    }


if __name__ == "__main__":
    print(json.dumps({path: read(path) for path in sys.argv[1:]}))
