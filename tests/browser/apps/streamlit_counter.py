"""A Streamlit app for tests/browser/test_real_apps.py: a button whose clicks reach the server
over Streamlit's WebSocket (``_stcore/stream``) and come back as a re-rendered page."""

import streamlit as st

st.title("Linx counter")
if "n" not in st.session_state:
    st.session_state.n = 0
if st.button("Add one"):
    st.session_state.n += 1
st.markdown(f"count: {st.session_state.n}")
