"""The torch-free description of a run: configs, families and their variants, the network plan, cost, fields and edits,
statistics as rows, presets, and the JSON schemas of results. Nothing here imports torch: the API and the dashboard
validate, plan and cost with it."""
