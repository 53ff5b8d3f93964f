PORT=$(../.venv/bin/python -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
for i in 0 1; do
  KERAS_DISTRIBUTION_JOB_ADDRESSES=127.0.0.1:$PORT KERAS_DISTRIBUTION_NUM_PROCESSES=2 KERAS_DISTRIBUTION_PROCESS_ID=$i timeout 300 ../.venv/bin/python dp.py > p$i.log 2>&1 &
done
wait
