# What `cargo xtask lab --azure` reads after apply (`terraform output -json`).

output "resource_group_name" {
  value = azurerm_resource_group.lab.name
}

output "location" {
  value = azurerm_resource_group.lab.location
}

output "job_name" {
  value = azurerm_container_app_job.job.name
}

output "container_name" {
  value = var.job_name
}

output "servicebus_namespace" {
  value = azurerm_servicebus_namespace.lab.name
}

output "servicebus_fqdn" {
  value = "${azurerm_servicebus_namespace.lab.name}.servicebus.windows.net"
}

output "queue_name" {
  value = azurerm_servicebus_queue.messages.name
}

output "image" {
  value = local.image
}

output "scaler_auth" {
  value = var.scaler_auth
}

output "log_analytics_workspace_id" {
  description = "Workspace (customer) id for `az monitor log-analytics query`."
  value       = azurerm_log_analytics_workspace.lab.workspace_id
}
