"""The dashboard's entry point: `streamlit run app/main.py` (API_URL says where the API is)."""

from __future__ import annotations

import streamlit as st

from app import layout


def main() -> None:
    st.set_page_config(
        page_title="Signal propagation explorer", layout="wide", page_icon=":material/ssid_chart:"
    )
    pages = [
        st.Page("views/explore.py", title="Explorer", icon=":material/ssid_chart:", default=True),
        st.Page(
            "views/train.py", title="Train", icon=":material/model_training:", url_path="train"
        ),
        st.Page("views/sweeps.py", title="Sweeps", icon=":material/grid_on:", url_path="sweeps"),
        st.Page(
            "views/plugins.py", title="Your network", icon=":material/hub:", url_path="plugins"
        ),
        st.Page("views/jobs.py", title="Jobs", icon=":material/list_alt:", url_path="jobs"),
    ]
    layout.measure()  # every page lays itself out for the width measured in the browser
    st.navigation(pages).run()


if __name__ == "__main__":
    main()
