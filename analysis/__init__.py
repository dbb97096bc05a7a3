"""Everything but the mitmproxy glue: nothing in here imports mitmproxy.

recording/ (capture -> worker process -> segments, status), parsers/ (wire formats), pricing/,
store/ (the data directory), simulate/ (policies and their replay), capture_setup/ (CA, firewall).
"""
