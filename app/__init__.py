"""The Streamlit dashboard: explore SPPs in the browser through the API (never torch here)."""
