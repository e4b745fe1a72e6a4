resource "azurerm_servicebus_namespace" "lab" {
  name                = local.names.servicebus
  location            = azurerm_resource_group.lab.location
  resource_group_name = azurerm_resource_group.lab.name
  sku                 = "Standard"
  minimum_tls_version = "1.2"
  # Shared keys are only needed when the scaler authenticates with the connection string; everything
  # else (worker, runner) uses Entra tokens.
  local_auth_enabled = !local.scaler_uses_identity
  tags               = local.tags
}

resource "azurerm_servicebus_queue" "messages" {
  name                 = var.queue_name
  namespace_id         = azurerm_servicebus_namespace.lab.id
  partitioning_enabled = false
  lock_duration        = var.queue_lock_duration
  max_delivery_count   = var.queue_max_delivery_count
}

# The worker receives and completes: Data Receiver on the queue, nothing more.
resource "azurerm_role_assignment" "job_receiver" {
  scope                = azurerm_servicebus_queue.messages.id
  role_definition_name = "Azure Service Bus Data Receiver"
  principal_id         = azurerm_user_assigned_identity.job.principal_id
  principal_type       = "ServicePrincipal"
}

# KEDA counts active messages through the Service Bus management API, which needs Manage rights:
# for Entra that is Data Owner (Receiver is not enough). A separate identity keeps the worker's small.
resource "azurerm_role_assignment" "scaler_owner" {
  count                = local.scaler_uses_identity ? 1 : 0
  scope                = azurerm_servicebus_queue.messages.id
  role_definition_name = "Azure Service Bus Data Owner"
  principal_id         = azurerm_user_assigned_identity.scaler[0].principal_id
  principal_type       = "ServicePrincipal"
}

# The participant sends the test message with their az login token (the tutorial used the portal's
# Service Bus Explorer, which needs the same role).
resource "azurerm_role_assignment" "operator_sender" {
  count                = local.operator_object_id == "" ? 0 : 1
  scope                = azurerm_servicebus_queue.messages.id
  role_definition_name = "Azure Service Bus Data Sender"
  principal_id         = local.operator_object_id
}
