# tasks.capnp — work items and their results for the worker system.
#
# A Task is submitted by a client and executed by one worker; the worker
# answers with a Result carrying the task's id. `attempt` counts deliveries
# (1 = first try) so a worker can tell a retry after a crash from a new task.
@0xd4f5064255ed8288;

$import "/capnp/c++.capnp".namespace("ipc::schema");

struct Task {
  id @0 :UInt64;
  kind @1 :Text;            # what to do; workers register the kinds they serve
  payload @2 :Data;         # kind-specific arguments (often a nested capnp message)
  deadlineNs @3 :Int64;     # CLOCK_MONOTONIC ns; 0 = no deadline
  attempt @4 :UInt32;
}

struct Result {
  taskId @0 :UInt64;
  union {
    ok @1 :Data;
    error :group {
      code @2 :UInt32;
      message @3 :Text;
    }
  }
}
