"""Plotly figures of results, shared by the command line and the dashboard."""
