-- vtorque-prologue's job_submit.lua for Slurm (slurm.conf: JobSubmitPlugins=lua;
-- slurmctld loads this file from the directory of slurm.conf).
--
-- A job whose script mentions VMs, or that asks for a partition the ini's
-- [policy] vm_queues names, is handed to `vtorque-prologue submit-check`, the
-- submit filter's cheap check of its #VM lines (no image is hashed or
-- inspected here). A bad request is refused with our message:
--   sbatch: error: vtorque: job not submitted: ...
-- The check runs inside slurmctld, as SlurmUser, time-boxed by TIMEOUT so it
-- never holds slurmctld long; a check that cannot run refuses the job rather
-- than pass it unchecked.
--
-- A VM job that passes gets three lines of ours before its script (src/slurm/
-- wrap.ts has the same text): they exec RUNNER, which runs the script as
-- submitted inside VM 0 once the Prolog has booted it. Slurm has no job
-- starter; this is its place. Lines like ours that a user wrote themselves
-- are stripped first, so slurmctld stores them at most once.
--
-- The Prolog never trusts anything this filter could store in the job (its
-- comment is the user's to change): it reads the #VM lines from the script.

-- Edited by install.sh --slurm: the program (as shell words) and the ini.
local VTORQUE = "/usr/local/bin/vtorque-prologue"
local CONFIG = "/etc/vtorque/prologue.ini"
local RUNNER = "/opt/vtorque-prologue/bin/vtorque-slurm-run"
local TIMEOUT = "10"
local TIMEOUT_TOOL = "/usr/bin/timeout"

local function quote(s)
  return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

-- Only these scripts are looked at: "#VM" lines, vTorque's "#PBS -vm" (any case, as the scanner warns about look-alikes).
local function mentions_vms(script)
  return string.find(string.lower(script), "#%s*vm") ~= nil or string.find(string.lower(script), "#%s*pbs%s+%-vm") ~= nil
end

-- [policy] vm_queues of the ini: a job in one of these partitions is a VM job without #VM lines.
local function vm_partitions()
  local f = io.open(CONFIG, "r")
  local out = {}
  if not f then return out end
  local section = ""
  for l in f:lines() do
    local s = string.match(l, "^%s*%[%s*([%w_]+)%s*%]")
    if s then section = string.lower(s) end
    local v = string.match(l, "^%s*vm_queues%s*=%s*(.-)%s*$")
    if section == "policy" and v then
      for q in string.gmatch(v, "[^,%s]+") do out[q] = true end
    end
  end
  f:close()
  return out
end

local function in_vm_partition(partition)
  if partition == nil or partition == "" then return false end
  local vm = vm_partitions()
  for p in string.gmatch(partition, "[^,]+") do
    if vm[p] then return true end
  end
  return false
end

-- Our three lines (src/slurm/wrap.ts WRAP_SHEBANG, WRAP_NOTE and the exec line).
local WRAP_HEAD = "#!/bin/sh\n# vtorque: job_submit.lua wrapped this VM job: the script as submitted follows the exec line, and runs in VM 0 (vtorque-prologue help slurm-prolog)\n"

local function wrap(script)
  return WRAP_HEAD .. "exec '" .. RUNNER .. "' \"$0\" \"$@\"\n" .. script
end

-- Every layer of our lines at the start, whoever wrote them.
local function unwrap(script)
  while string.sub(script, 1, #WRAP_HEAD) == WRAP_HEAD do
    local rest = string.sub(script, #WRAP_HEAD + 1)
    local line = string.match(rest, "^exec '/[^'\n]*' \"%$0\" \"%$@\"\n")
    if line == nil then break end
    script = string.sub(rest, #line + 1)
  end
  return script
end

-- Exit codes of submit-check --vm-status: 0 not a VM job, 10 a VM job that passed, 1 refused, 2 could not check.
local EXIT_VM_JOB = 10

local function check(script, uid, partition)
  local tmp = os.tmpname()
  local f = io.open(tmp, "w")
  if not f then return 2, "vtorque: job not submitted: the VM request check could not write its input. Fix: (admin) check slurmctld's /tmp" end
  f:write(script)
  f:close()
  local cmd = TIMEOUT_TOOL .. " -s KILL " .. TIMEOUT .. " " .. VTORQUE .. " --config " .. quote(CONFIG) .. " submit-check --vm-status --uid " .. tostring(uid)
  if partition ~= nil and partition ~= "" then cmd = cmd .. " --partition " .. quote(partition) end
  local p = io.popen(cmd .. " < " .. quote(tmp) .. " 2>&1; echo \"vtorque-exit:$?\"", "r")
  local out = p:read("*a") or ""
  p:close()
  os.remove(tmp)
  local code = tonumber(string.match(out, "vtorque%-exit:(%d+)%s*$") or "2")
  out = string.gsub(out, "\n?vtorque%-exit:%d+%s*$", "")
  if code == 137 or code == 124 then
    return 2, "vtorque: job not submitted: the VM request check did not finish within " .. TIMEOUT .. " s; resubmit in a moment, or tell your admin"
  end
  return code, out
end

function slurm_job_submit(job_desc, part_list, submit_uid)
  local script = job_desc.script
  if script == nil then return slurm.SUCCESS end
  local bare = unwrap(script)
  if bare ~= script then job_desc.script = bare end
  if not mentions_vms(bare) and not in_vm_partition(job_desc.partition) then return slurm.SUCCESS end
  local code, out = check(bare, submit_uid, job_desc.partition)
  if code == 0 or code == EXIT_VM_JOB then
    if out ~= "" then slurm.log_user("%s", out) end
    if code == EXIT_VM_JOB then job_desc.script = wrap(bare) end
    return slurm.SUCCESS
  end
  if out == "" then out = "vtorque: job not submitted: the VM request check failed (exit " .. tostring(code) .. "). Fix: (admin) run vtorque-prologue doctor" end
  slurm.log_user("%s", out)
  return slurm.ERROR
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
  return slurm.SUCCESS
end

return slurm.SUCCESS
