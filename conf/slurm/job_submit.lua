-- vtorque-prologue's job_submit.lua for Slurm (slurm.conf: JobSubmitPlugins=lua;
-- slurmctld loads this file from the directory of slurm.conf).
--
-- A job whose script mentions VMs is handed to `vtorque-prologue submit-check`,
-- the submit filter's cheap check of its #VM lines (no image is hashed or
-- inspected here). A bad request is refused with our message:
--   sbatch: error: vtorque: job not submitted: ...
-- The check runs inside slurmctld, as SlurmUser, time-boxed by TIMEOUT so it
-- never holds slurmctld long; a check that cannot run refuses the job rather
-- than pass it unchecked (the Prolog would cancel it later anyway).
--
-- The Prolog never trusts anything this filter could store in the job (its
-- comment is the user's to change): it reads the #VM lines from the script.

-- Edited by install.sh --slurm: the program (as shell words) and the ini.
local VTORQUE = "/usr/local/bin/vtorque-prologue"
local CONFIG = "/etc/vtorque/prologue.ini"
local TIMEOUT = "10"
local TIMEOUT_TOOL = "/usr/bin/timeout"

local function quote(s)
  return "'" .. string.gsub(s, "'", "'\\''") .. "'"
end

-- Only these scripts are looked at: "#VM" lines, vTorque's "#PBS -vm" (any case, as the scanner warns about look-alikes).
local function mentions_vms(script)
  return string.find(string.lower(script), "#%s*vm") ~= nil or string.find(string.lower(script), "#%s*pbs%s+%-vm") ~= nil
end

local function check(script, uid, partition)
  local tmp = os.tmpname()
  local f = io.open(tmp, "w")
  if not f then return 2, "vtorque: job not submitted: the VM request check could not write its input. Fix: (admin) check slurmctld's /tmp" end
  f:write(script)
  f:close()
  local cmd = TIMEOUT_TOOL .. " -s KILL " .. TIMEOUT .. " " .. VTORQUE .. " --config " .. quote(CONFIG) .. " submit-check --uid " .. tostring(uid)
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
  if script == nil or not mentions_vms(script) then return slurm.SUCCESS end
  local code, out = check(script, submit_uid, job_desc.partition)
  if code == 0 then
    if out ~= "" then slurm.log_user("%s", out) end
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
