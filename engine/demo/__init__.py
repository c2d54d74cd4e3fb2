"""The demo: generated, labelled-as-demo data, the demo workspace, the traffic simulator and
the live demo behind `beast console --demo`.
"""
