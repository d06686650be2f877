import json, sys, time
def slow_function(item):
    time.sleep(0.1)
    return item
for line in sys.stdin:
    msg = json.loads(line)
    try: out = {"id": msg["id"], "result": slow_function(msg["item"])}
    except Exception as e: out = {"id": msg["id"], "error": repr(e)}
    print(json.dumps(out), flush=True)
